/* sinks/kube.c - placeholder until implemented. */
