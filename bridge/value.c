/* bridge/value.c - placeholder until implemented. */
