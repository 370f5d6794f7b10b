"""IAM: the service roles each account has (``models``) and GetRole (``responses``)."""
