"""Service Quotas: the import-task quota (``models``) and GetServiceQuota (``responses``)."""
