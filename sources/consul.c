/* sources/consul.c - placeholder until implemented. */
