"""Action and block ids: one name for each, shared by templates and `register()`."""

SHARE = "share_answer"
SHARE_BLOCK = "share"
ALERT_ACK = "alert_ack"
ALERT_SNOOZE_DAY = "alert_snooze_day"
ALERT_SNOOZE_WEEK = "alert_snooze_week"
ALERT_TAKE = "alert_take"
ALERT_BLOCK = "alert_actions"
