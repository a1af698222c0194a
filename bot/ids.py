"""Action and block ids: one name for each, shared by templates and `register()`."""

SHARE = "share_answer"
SHARE_BLOCK = "share"
