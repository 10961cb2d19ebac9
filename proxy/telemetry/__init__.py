"""The usage records' way: the in-flight journal, the batcher, the writer thread and the disk spool,
one delivery lane per sink (the local store, Cast AI, OTLP), and the tags a record carries."""
