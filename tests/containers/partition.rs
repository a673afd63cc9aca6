//! Partitions between the chart's pods (docker network disconnect).
