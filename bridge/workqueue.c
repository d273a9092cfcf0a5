/* bridge/workqueue.c - placeholder until implemented. */
