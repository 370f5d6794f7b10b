"""The domain: what a row asks for (``request``), the services' rules (``apimodel``), an
image's identity and a request's clientToken (``tokens``), a row's states and outcome
(``rowstate``, ``results``), the names of the stages it moves through (``stages``).
Pure values and rules: no I/O, no AWS."""
