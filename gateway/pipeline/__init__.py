"""The request contract at the bottom of the request path.

Every stage, the router, the front adapters and the back adapters import these modules; these import
none of them (checked by the import-linter contracts in pyproject.toml).
"""
