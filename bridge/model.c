/* bridge/model.c - placeholder until implemented. */
