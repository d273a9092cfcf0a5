/* sinks/kubeconfig.c - placeholder until implemented. */
