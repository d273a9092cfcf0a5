/* bridge/config.c - placeholder until implemented. */
