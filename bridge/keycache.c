/* bridge/keycache.c - placeholder until implemented. */
