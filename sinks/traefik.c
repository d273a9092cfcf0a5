/* sinks/traefik.c - placeholder until implemented. */
