"""REST mode's durable side: the per-user job queue, the background workers and sending through Twilio."""
