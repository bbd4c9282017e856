//! Client-side load balancing for watertight: P2C/PeakEWMA, weights, priorities, zone-aware routing and outlier detection.
