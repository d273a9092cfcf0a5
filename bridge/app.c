/* bridge/app.c - placeholder until implemented. */
