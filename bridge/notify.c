/* bridge/notify.c - placeholder until implemented. */
