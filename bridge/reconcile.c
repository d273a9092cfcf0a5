/* bridge/reconcile.c - placeholder until implemented. */
