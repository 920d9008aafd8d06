"""Fundraising: donors give to fundraisers, often after an email; every model is audited."""
