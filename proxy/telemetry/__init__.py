"""Usage records: built per request, enqueued without waiting, flushed in batches to sinks."""
