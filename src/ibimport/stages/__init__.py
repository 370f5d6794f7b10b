"""The stages a row moves through: the EC2 import task checked (``taskcheck``, gated by
``taskgate``), the image already there (``existing``), the image imported (the runner), the
image followed to its final state (``imagewait``)."""
