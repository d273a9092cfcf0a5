/* bridge/metrics.c - placeholder until implemented. */
