//! A rolling restart of the chart's pods, as `kubectl rollout restart` does it: one pod at
//! a time gets SIGTERM (`docker stop` with the chart's grace period), comes back, and must
//! pass its readiness probe before the next one goes, while workers call each other
//! through the load balancer. No call may fail.
