/* sinks/informer.c - placeholder until implemented. */
