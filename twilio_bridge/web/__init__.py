"""Request plumbing every Twilio route shares: signatures, retried webhooks, error answers, health, metrics."""
