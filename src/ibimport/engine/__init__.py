"""The engine: which rows, where (``selection``, ``partitions``), run per partition
(``runner``, ``fleet``), a batch's lifecycle (``batch``), and what comes after it
(``followup``). It prints nothing and imports neither the CLI nor the emulator."""
