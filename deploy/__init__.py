"""What the docker-compose stack runs besides Airflow itself: the seed job and the api-server's login file."""
