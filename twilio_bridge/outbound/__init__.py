"""The outbound API: the operator's systems send a WhatsApp template or an SMS, or start a call, with the
context the assistant should know when the customer answers."""
