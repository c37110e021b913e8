"""The operators' front door: an authenticated HTTP API and a server-rendered console, one process."""
