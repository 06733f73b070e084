# The Airflow 3 image with the Aporia provider, used by every service in docker-compose.yaml.
# Airflow matches the version the provider is tested with; override with --build-arg AIRFLOW_IMAGE=...
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

USER root
# Spark, the extraction engine, needs a JRE, and reads Redshift with the PostgreSQL JDBC driver at
# /usr/share/java/postgresql.jar (the path the provider looks for).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless \
        libpostgresql-jdbc-java \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && test -f /usr/share/java/postgresql.jar
# The local stack's state directory. A fresh named volume mounted here takes this owner, so the
# stand-ins, running as airflow (PostgreSQL refuses root), can write to it; group 0 for arbitrary UIDs.
RUN mkdir -p /stack && chown airflow:0 /stack && chmod 0775 /stack

USER airflow
COPY --chown=airflow:0 . /opt/aporia-provider
# Pinning Airflow to the image's own version stops pip from moving it while resolving the provider; its spark extra
# runs syncs on the stack's Spark Connect server (the example DAG's default connection). The local
# stand-ins (and their `aporia-local` command) are their own distribution, beside the provider.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "/opt/aporia-provider[spark]" /opt/aporia-provider/aporia-local
