//! Bulkheads for watertight: static and adaptive concurrency limits, partitions and admission control.
