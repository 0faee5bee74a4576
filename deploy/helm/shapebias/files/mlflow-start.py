"""Start the MLflow tracking server (shapebias chart).

Credentials arrive as environment variables from Secrets; this script turns them into what
MLflow reads (a backend URI with the password URL-quoted, an auth config file in a private
emptyDir) and execs `mlflow server`, so no credential is ever written into the chart's output
or a process argument.
"""
import os
import sys
import urllib.parse

env = os.environ
quote = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731

for var in ("DB_USERNAME", "DB_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    if not env.get(var):
        sys.exit(f"mlflow-start: {var} is empty: check the Secret it comes from")

db_uri = "postgresql://{}:{}@{}:{}/{}?sslmode={}".format(
    quote(env["DB_USERNAME"]), quote(env["DB_PASSWORD"]), env["DB_HOST"], env["DB_PORT"],
    env["DB_NAME"], env.get("DB_SSLMODE", "disable"),
)
env["MLFLOW_BACKEND_STORE_URI"] = db_uri

auth_dir = env.get("AUTH_CONFIG_DIR", "/tmp/mlflow-auth")
os.makedirs(auth_dir, mode=0o700, exist_ok=True)
auth_ini = os.path.join(auth_dir, "basic_auth.ini")
fd = os.open(auth_ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    # configparser interpolation: a literal % in the URI must be doubled
    f.write("[mlflow]\n")
    f.write(f"default_permission = {env.get('AUTH_DEFAULT_PERMISSION', 'READ')}\n")
    f.write(f"database_uri = {db_uri.replace('%', '%%')}\n")
    f.write("authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
env["MLFLOW_AUTH_CONFIG_PATH"] = auth_ini

if env.get("S3_CREATE_BUCKET") == "true":  # in-cluster S3 server: make the bucket on first start
    import time

    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"])
    for attempt in range(60):  # the S3 server may still be starting
        try:
            try:
                s3.head_bucket(Bucket=env["S3_BUCKET"])
            except ClientError:
                s3.create_bucket(Bucket=env["S3_BUCKET"])
                print(f"mlflow-start: created bucket {env['S3_BUCKET']}", flush=True)
            break
        except EndpointConnectionError:
            time.sleep(2)
    else:
        sys.exit(f"mlflow-start: S3 endpoint {env['MLFLOW_S3_ENDPOINT_URL']} is unreachable")

args = [
    "mlflow", "server",
    "--host", "0.0.0.0",
    "--port", env["MLFLOW_PORT"],
    "--workers", env.get("MLFLOW_WORKERS", "2"),
    "--serve-artifacts",
    "--artifacts-destination", env["ARTIFACTS_DESTINATION"],
    "--app-name", "basic-auth",
    "--allowed-hosts", env["ALLOWED_HOSTS"],
]
print("mlflow-start: exec", " ".join(args), flush=True)
os.execvp(args[0], args)
