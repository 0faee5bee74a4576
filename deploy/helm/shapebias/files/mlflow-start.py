"""Start the MLflow tracking server (shapebias chart).

Credentials arrive as environment variables from Secrets; this script turns them into what
MLflow reads (a backend URI with the password URL-quoted, an auth config file in a private
emptyDir), makes sure the RayJobs' own MLflow account exists (not an admin; EDIT on the jobs'
experiment, nothing more than the default permission elsewhere), and execs `mlflow server`, so
no credential is ever written into the chart's output or a process argument.
"""
import os
import sys
import time
import urllib.parse

REQUIRED = ("DB_USERNAME", "DB_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_JOB_USERNAME", "MLFLOW_JOB_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def check_env(env) -> None:
    for var in REQUIRED:
        if not env.get(var):
            sys.exit(f"mlflow-start: {var} is empty: check the Secret it comes from")
    if env["MLFLOW_JOB_USERNAME"] == env["MLFLOW_AUTH_ADMIN_USERNAME"]:
        sys.exit("mlflow-start: the job account must not be the admin account (mlflow.auth.jobSecret)")


def backend_uri(env) -> str:
    quote = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
    return "postgresql://{}:{}@{}:{}/{}?sslmode={}".format(
        quote(env["DB_USERNAME"]), quote(env["DB_PASSWORD"]), env["DB_HOST"], env["DB_PORT"],
        env["DB_NAME"], env.get("DB_SSLMODE", "require"),
    )


def write_auth_config(env, db_uri: str) -> str:
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
    return auth_ini


def provision_job_account(db_uri: str, username: str, password: str, experiment: str) -> str:
    """The job account: created (or its password reset from the Secret), never an admin, with EDIT
    on ``experiment`` (created here if new, where the server would put it). Returns its id."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root

    tracking = TrackingStore(db_uri, resolve_default_artifact_root(True, "", db_uri))
    found = tracking.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else tracking.create_experiment(experiment)
    auth = AuthStore()
    auth.init_db(db_uri)
    if auth.has_user(username, use_primary=True):
        auth.update_user(username, password=password, is_admin=False)
    else:
        auth.create_user(username, password, is_admin=False)
    granted = {p.experiment_id: p.permission for p in auth.list_experiment_permissions(username)}
    if experiment_id not in granted:
        auth.create_experiment_permission(experiment_id, username, "EDIT")
    elif granted[experiment_id] != "EDIT":
        auth.update_experiment_permission(experiment_id, username, "EDIT")
    return experiment_id


def create_bucket(env) -> None:
    """In-cluster S3 server: make the bucket on first start."""
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"])
    for _ in range(60):  # the S3 server may still be starting
        try:
            try:
                s3.head_bucket(Bucket=env["S3_BUCKET"])
            except ClientError:
                s3.create_bucket(Bucket=env["S3_BUCKET"])
                print(f"mlflow-start: created bucket {env['S3_BUCKET']}", flush=True)
            return
        except EndpointConnectionError:
            time.sleep(2)
    sys.exit(f"mlflow-start: S3 endpoint {env['MLFLOW_S3_ENDPOINT_URL']} is unreachable")


def server_args(env) -> list:
    return [
        "mlflow", "server",
        "--host", "0.0.0.0",
        "--port", env["MLFLOW_PORT"],
        "--workers", env.get("MLFLOW_WORKERS", "2"),
        "--serve-artifacts",
        "--artifacts-destination", env["ARTIFACTS_DESTINATION"],
        "--app-name", "basic-auth",
        "--allowed-hosts", env["ALLOWED_HOSTS"],
    ]


def main() -> None:
    env = os.environ
    check_env(env)
    db_uri = backend_uri(env)
    env["MLFLOW_BACKEND_STORE_URI"] = db_uri
    env["MLFLOW_AUTH_CONFIG_PATH"] = write_auth_config(env, db_uri)
    if env.get("S3_CREATE_BUCKET") == "true":
        create_bucket(env)
    experiment = env.get("JOB_EXPERIMENT", "shapebias")
    for attempt in range(3):  # replicas starting together may race to create the same rows
        try:
            provision_job_account(db_uri, env["MLFLOW_JOB_USERNAME"], env["MLFLOW_JOB_PASSWORD"], experiment)
            break
        except Exception as exc:  # noqa: BLE001 - retried, then reported
            if attempt == 2:
                sys.exit(f"mlflow-start: could not set up the job account: {exc}")
            time.sleep(2)
    print(f"mlflow-start: job account {env['MLFLOW_JOB_USERNAME']} has EDIT on experiment {experiment}", flush=True)
    for var in ("MLFLOW_JOB_USERNAME", "MLFLOW_JOB_PASSWORD"):  # the server itself never needs them
        env.pop(var)
    args = server_args(env)
    print("mlflow-start: exec", " ".join(args), flush=True)
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
