"""STS: who a caller is (``models``) and AssumeRole / GetCallerIdentity (``responses``)."""
