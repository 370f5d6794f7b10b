"""The AWS seam: the only package that imports aioboto3/botocore. Sessions, one client per
partition, and the error boundary that turns botocore's failures into ``CallError``."""
