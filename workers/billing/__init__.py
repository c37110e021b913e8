"""Billing consumer: forwards invoice jobs, drops those of suspended customers."""
