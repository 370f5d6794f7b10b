"""S3: buckets and objects (``models``) and the REST-XML operations a wave needs (``responses``)."""
