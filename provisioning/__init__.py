"""The field technician's tool: register, secure, configure and check edge nodes."""
