"""Developer tools: a throwaway PostgreSQL server and sample data for tests, the demo and benchmarks."""
