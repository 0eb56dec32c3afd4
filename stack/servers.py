"""The local single-node stack: Kafka (KRaft) and Cassandra from Maven Central jars on Java 17,
PostgreSQL and Redis from Debian packages. Data, logs and jars live under settings.stack.dir.

`up()` is idempotent: a server whose port already answers is left alone; each start waits until the
server accepts connections, and a failure names the server and its log file.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings

HERE = Path(__file__).resolve().parent


class StackError(RuntimeError):
    pass


@dataclass
class ServerStatus:
    name: str
    address: str
    up: bool
    pid: int | None
    rss_mb: float | None
    log: Path


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_CHILDREN: dict[int, subprocess.Popen] = {}


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:  # our own child that exited (a zombie)
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _wait(what: str, check, timeout: float, log: Path, pid_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid_file is not None and pid_file.exists() and _read_pid(pid_file) is None:
            raise StackError(f"{what} exited during start-up; see its log: {log}\n{_tail(log)}")
        time.sleep(0.5)
    raise StackError(f"{what} did not accept connections within {timeout:.0f} s; see its log: {log}\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30  # linux/prctl.h


@contextlib.contextmanager
def _timer_slack(ns: int | None) -> Iterator[None]:
    """Run the block with this thread's timer slack at `ns` nanoseconds (None: as it is).

    A process forked meanwhile starts with it, keeps it across exec, and every thread it creates
    inherits it (prctl(2), PR_SET_TIMERSLACK): the way to give a server coarser sleeps without a
    wrapper binary.
    """
    if not ns:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    old = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
    if libc.prctl(_PR_SET_TIMERSLACK, int(ns), 0, 0, 0) != 0:
        raise StackError(f"prctl(PR_SET_TIMERSLACK, {ns}) failed: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        libc.prctl(_PR_SET_TIMERSLACK, old, 0, 0, 0)


def _spawn(cmd: list[str], log: Path, pid_file: Path, env: dict[str, str] | None = None,
           user: str | None = None, timer_slack_ns: int | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out, _timer_slack(timer_slack_ns):
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})}, user=user,
        )
    pid_file.write_text(str(proc.pid))
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _stop_pid(pid_file: Path, timeout: float = 60) -> bool:
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.3)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------------------------------
# Java and jars
# ---------------------------------------------------------------------------------------------

def java_home(settings: Settings) -> Path:
    if settings.stack.java_home:
        return settings.stack.java_home
    for cand in sorted(glob.glob("/usr/lib/jvm/*17*")):
        if Path(cand, "bin", "java").exists():
            return Path(cand)
    raise StackError("no Java 17 found under /usr/lib/jvm; install openjdk-17-jdk-headless "
                     "(Kafka 4 and Cassandra 5.0 need Java 17)")


def fetch_jars(name: str, settings: Settings) -> Path:
    """Copy a server's runtime jars from Maven Central (cached in ~/.m2) into the stack dir."""
    libs = settings.stack.dir / name / "libs"
    stamp = libs / ".complete"
    version = settings.stack.kafka_version if name == "kafka" else settings.stack.cassandra_version
    if stamp.exists() and stamp.read_text() == version:
        return libs
    if shutil.which("mvn") is None:
        raise StackError("mvn not found: install maven (apt-get install maven)")
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    pom = HERE / name / "pom.xml"
    prop = "kafka.version" if name == "kafka" else "cassandra.version"
    env = {**os.environ, "JAVA_HOME": str(java_home(settings))}
    cmd = ["mvn", "-B", "-q", "-f", str(pom), f"-D{prop}={version}", "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={libs}"]
    log = settings.stack.dir / name / "logs" / "mvn.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # ~/.m2 is the download cache: with it warm this takes seconds and asks Central for nothing.
    with open(log, "wb") as out:
        if subprocess.run(cmd, stdout=out, stderr=out, env=env).returncode != 0:
            raise StackError(f"fetching {name} {version} jars with mvn failed; see {log}\n{_tail(log)}")
    if len(list(libs.glob("*.jar"))) < 10:
        raise StackError(f"mvn copied too few {name} jars into {libs}; see {log}")
    stamp.write_text(version)
    return libs


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------

def _kafka_paths(settings: Settings) -> tuple[Path, Path, Path, Path]:
    base = settings.stack.dir / "kafka"
    return base, base / "data", base / "logs" / "server.log", base / "kafka.pid"


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka's own ``Uuid.randomUuid()`` makes it: 22 url-safe base64
    characters that never start with ``-``. One uuid in 64 encodes to a leading ``-``; Kafka
    redraws those because command lines read such an id as an option (``kafka-storage format -t
    -x...`` fails with "expected one argument"), so this redraws them too."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def start_kafka(settings: Settings) -> str:
    host, port = settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    base, data, log, pid_file = _kafka_paths(settings)
    if _port_open(host, int(port)):
        return "already running"
    libs = fetch_jars("kafka", settings)
    java = str(java_home(settings) / "bin" / "java")
    data.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    props = base / "server.properties"
    props.write_text((HERE / "kafka" / "server.properties").read_text()
                     .replace("@HOST@", host).replace("@PORT@", port)
                     .replace("@CONTROLLER_PORT@", str(int(port) + 1))
                     .replace("@DATA@", str(data)).replace("@PARTITIONS@", str(settings.kafka.partitions)))
    log4j = HERE / "kafka" / "log4j2.properties"
    logopts = [f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={log.parent}"]
    cp = f"{libs}/*"
    if not (data / "meta.properties").exists():
        fmt = subprocess.run([java, *logopts, "-cp", cp, "kafka.tools.StorageTool", "format",
                              f"--cluster-id={kafka_cluster_id()}",
                              "-c", str(props), "--ignore-formatted"], capture_output=True, text=True)
        if fmt.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
    heap = settings.stack.kafka_heap
    _spawn([java, f"-Xms{heap}", f"-Xmx{heap}", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true", *logopts,
            "-cp", cp, "kafka.Kafka", str(props)], log, pid_file)
    _wait("kafka", lambda: _port_open(host, int(port)), 120, log, pid_file)
    return "started"


def ensure_topics(settings: Settings) -> list[str]:
    """Create the contract topics with the configured partition count; existing ones are kept."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    deadline = time.monotonic() + 60
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise StackError("kafka accepts connections but answers no metadata request") from None
            time.sleep(1)
    wanted = [t for t in settings.kafka.topics.values() if t not in existing]
    if wanted:
        futures = admin.create_topics([
            NewTopic(t, num_partitions=settings.kafka.partitions,
                     replication_factor=settings.kafka.replication_factor) for t in wanted])
        for topic, fut in futures.items():
            try:
                fut.result(timeout=30)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"creating topic {topic} failed: {exc}") from None
    return wanted


def changelog_group(topic: str) -> str | None:
    """The consumer group a quixstreams changelog topic belongs to (`changelog__<group>--...`)."""
    return topic[len("changelog__"):].split("--")[0] if topic.startswith("changelog__") else None


def drop_groups(bootstrap: str, groups: list[str]) -> list[str]:
    """Delete what throwaway consumer groups (a test's, a benchmark run's) leave on the broker: their
    quixstreams changelog topics (`changelog__<group>--...`, 8 partitions each) and the groups'
    committed offsets. Returns the topics deleted. Long-lived jobs never call this."""
    from confluent_kafka.admin import AdminClient

    if not groups:
        return []
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = set(groups)
    topics = sorted(t for t in admin.list_topics(timeout=10).topics if changelog_group(t) in wanted)
    for fut in admin.delete_topics(topics, operation_timeout=30).values() if topics else ():
        fut.result(timeout=60)
    for fut in admin.delete_consumer_groups(groups, request_timeout=30).values():
        try:
            fut.result(timeout=60)
        except Exception:  # noqa: BLE001 - a group that never committed, or still has a member: left
            pass
    return topics


# ---------------------------------------------------------------------------------------------
# Cassandra
# ---------------------------------------------------------------------------------------------

_CASSANDRA_JVM = [
    "-Xss256k", "-ea", "-da:net.openhft...", "-XX:+UseThreadPriorities", "-XX:+HeapDumpOnOutOfMemoryError",
    "-XX:+UseTLAB", "-XX:+ResizeTLAB", "-XX:+PerfDisableSharedMem", "-Djava.net.preferIPv4Stack=true",
    "-Dchronicle.analytics.disable=true",
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1", "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5", "-XX:MaxGCPauseMillis=300", "-XX:InitiatingHeapOccupancyPercent=70",
    "-Djdk.attach.allowAttachSelf=true", "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true", "-Dio.netty.allocator.maxOrder=11",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0", "-Dcassandra.unsafesystem=true",
]
_EXPORTS = ["java.base/jdk.internal.misc", "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.management/com.sun.jmx.remote.security", "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server", "java.sql/java.sql", "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc"]
_OPENS = ["java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
          "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
          "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal",
          "java.base/sun.nio.ch", "java.base/java.io", "java.base/java.lang.reflect", "java.base/java.lang",
          "java.base/java.util", "java.base/java.nio"]


def _cassandra_paths(settings: Settings) -> tuple[Path, Path, Path, Path]:
    base = settings.stack.dir / "cassandra"
    return base, base / "data", base / "logs" / "system.log", base / "cassandra.pid"


def _cql_ready(settings: Settings) -> bool:
    host = settings.cassandra.contact_points[0]
    if not _port_open(host, settings.cassandra.port):
        return False
    from sinks.stores import cassandra_cluster

    try:
        cluster = cassandra_cluster(settings, connect_timeout=3)
        cluster.connect().execute("SELECT release_version FROM system.local")
        cluster.shutdown()
        return True
    except Exception:  # noqa: BLE001 - any driver error means "not yet"
        return False


def start_cassandra(settings: Settings) -> str:
    host = settings.cassandra.contact_points[0]
    base, data, log, pid_file = _cassandra_paths(settings)
    if _port_open(host, settings.cassandra.port):
        _wait("cassandra", lambda: _cql_ready(settings), 180, log)
        return "already running"
    libs = fetch_jars("cassandra", settings)
    java = str(java_home(settings) / "bin" / "java")
    for sub in ("data", "commitlog", "hints", "saved_caches", "cdc_raw"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    conf = base / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "cassandra.yaml").write_text((HERE / "cassandra" / "cassandra.yaml").read_text()
                                         .replace("@HOST@", host).replace("@PORT@", str(settings.cassandra.port))
                                         .replace("@DATA@", str(data)))
    shutil.copy(HERE / "cassandra" / "logback.xml", conf / "logback.xml")
    jamm = sorted(libs.glob("jamm-*.jar"))
    heap = settings.stack.cassandra_heap
    jna_tmp = base / "tmp"
    jna_tmp.mkdir(exist_ok=True)
    cmd = [java, f"-Xms{heap}", f"-Xmx{heap}", "-Xmn128m", *_CASSANDRA_JVM,
           *[a for e in _EXPORTS for a in ("--add-exports", f"{e}=ALL-UNNAMED")],
           *[a for o in _OPENS for a in ("--add-opens", f"{o}=ALL-UNNAMED")],
           *([f"-javaagent:{jamm[0]}"] if jamm else []),
           f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}", f"-Dcassandra.storagedir={data}",
           f"-Dcassandra.logdir={log.parent}", f"-Dlogback.configurationFile={conf / 'logback.xml'}",
           "-Dcassandra-foreground=yes", "-Dcassandra.jmx.local.port=7199", f"-Djna.tmpdir={jna_tmp}",
           "-cp", f"{conf}:{libs}/*", "org.apache.cassandra.service.CassandraDaemon"]
    # Coarser sleeps for Cassandra's threads: its shared request/mutation pool (SEPWorker) spins
    # idle workers through parkNanos(10 µs..) before parking them, tens of thousands of wake-ups a
    # second at 5,000 writes/s on two cores (docs/bench/pipeline.md, session 8).
    slack = settings.stack.cassandra_timer_slack_us * 1000
    _spawn(cmd, log.parent / "stdout.log", pid_file, timer_slack_ns=slack)
    _wait("cassandra", lambda: _cql_ready(settings), 240, log, pid_file)
    return "started"


# ---------------------------------------------------------------------------------------------
# PostgreSQL and Redis (Debian packages)
# ---------------------------------------------------------------------------------------------

def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise StackError("PostgreSQL server binaries not found: install postgresql (apt-get install postgresql)")
    return found[-1]


def _pg_user() -> str | None:
    """initdb and postgres refuse to run as root: run them as the Debian `postgres` user then."""
    return "postgres" if os.geteuid() == 0 else None


def pg_home(settings: Settings) -> Path:
    """Where PostgreSQL keeps data, log and socket. Normally .stack/postgres; as root the server
    runs as `postgres`, which may not be able to enter the checkout (a private clone under /tmp,
    a home directory), so its files live in a postgres-owned folder named after the stack dir."""
    if _pg_user() is None:
        return settings.stack.dir / "postgres"
    import hashlib

    tag = hashlib.sha1(str(Path(settings.stack.dir).resolve()).encode()).hexdigest()[:12]
    return Path("/var/lib/parcel-stack") / tag


OWNER_FILE = "stack_dir"  # in a /var/lib/parcel-stack/<tag> folder: the stack dir it belongs to


def prune_orphan_pg_homes(root: Path, keep: Path) -> list[Path]:
    """Delete the PostgreSQL folders under `root` whose checkout is gone (a fresh clone under /tmp
    that was removed) and whose server is not running. Folders without an owner file (written by
    versions before it existed) are left alone: their checkout cannot be told."""
    removed: list[Path] = []
    for home in sorted(root.iterdir()) if root.is_dir() else ():
        owner = home / OWNER_FILE
        if home == keep or not owner.is_file() or Path(owner.read_text().strip()).exists():
            continue
        pid_file = home / "data" / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
                continue  # still running
            except PermissionError:
                continue  # running, as another user
            except (ValueError, IndexError, ProcessLookupError):
                pass
        shutil.rmtree(home, ignore_errors=True)
        removed.append(home)
    return removed


def start_postgres(settings: Settings) -> str:
    host, port = settings.postgres.host_port
    base = pg_home(settings)
    data, log = base / "data", base / "logs" / "postgres.log"
    if _port_open(host, port):
        _ensure_pg_db(settings)
        return "already running"
    user = _pg_user()
    log.parent.mkdir(parents=True, exist_ok=True)
    sock = base / "run"
    sock.mkdir(parents=True, exist_ok=True)
    if user:
        for p in (base.parent, base, log.parent, sock):
            shutil.chown(p, user)
        owner = base / OWNER_FILE
        if not owner.exists():
            owner.write_text(str(Path(settings.stack.dir).resolve()) + "\n")
        prune_orphan_pg_homes(base.parent, keep=base)
        link = settings.stack.dir / "postgres"
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(base, target_is_directory=True)  # where to look, from the checkout
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(data, user)
        res = subprocess.run([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                              "--encoding=UTF8", "--locale=C.UTF-8"], capture_output=True, text=True, user=user)
        if res.returncode != 0:
            raise StackError(f"postgres initdb failed:\n{res.stdout}\n{res.stderr}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# parcel local stack\nfsync = on\n"
                       "shared_buffers = 256MB\nmax_connections = 200\n")
    res = subprocess.run([_pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                          # synchronous_commit on, also for clusters whose postgresql.conf an earlier
                          # version wrote with it off: the scan pipeline commits its Kafka offsets
                          # after PostgreSQL's COMMIT returns, so that commit must survive a crash.
                          "-o", f"-p {port} -c listen_addresses={host} -k {sock} -c synchronous_commit=on",
                          "start"],
                         capture_output=True, text=True, user=user)
    if res.returncode != 0:
        raise StackError(f"postgres failed to start; see its log: {log}\n{res.stdout}{res.stderr}\n{_tail(log)}")
    _wait("postgres", lambda: _port_open(host, port), 60, log)
    _ensure_pg_db(settings)
    return "started"


def _ensure_pg_db(settings: Settings) -> None:
    """Create the role and database named by postgres.dsn when missing (local trust auth)."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(settings.postgres.dsn)
    role, db = parts.username or "tracking", (parts.path.lstrip("/") or "tracking")
    admin_dsn = f"postgresql://postgres@{parts.hostname}:{parts.port or 5432}/postgres"
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname=%s", (role,)).fetchone():
                conn.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')  # tests use scratch DBs
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (db,)).fetchone():
                conn.execute(f'CREATE DATABASE "{db}" OWNER "{role}"')
    except psycopg.OperationalError:
        # Not our server (no trusted postgres superuser): the DSN's own database must already exist.
        pass


def stop_postgres(settings: Settings) -> bool:
    data = pg_home(settings) / "data"
    if not (data / "postmaster.pid").exists():
        return False
    res = subprocess.run([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                         capture_output=True, text=True, user=_pg_user())
    return res.returncode == 0


def _redis_paths(settings: Settings) -> tuple[Path, Path, Path]:
    base = settings.stack.dir / "redis"
    return base, base / "logs" / "redis.log", base / "redis.pid"


def start_redis(settings: Settings) -> str:
    host, port = settings.redis.host_port
    base, log, pid_file = _redis_paths(settings)
    if _port_open(host, port):
        return "already running"
    server = shutil.which("redis-server")
    if server is None:
        raise StackError("redis-server not found: install redis-server (apt-get install redis-server)")
    (base / "data").mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    _spawn([server, "--bind", host, "--port", str(port), "--dir", str(base / "data"),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--logfile", str(log), "--daemonize", "no", "--protected-mode", "no"], log, pid_file)
    _wait("redis", lambda: _port_open(host, port), 30, log, pid_file)
    return "started"


# ---------------------------------------------------------------------------------------------
# The whole stack
# ---------------------------------------------------------------------------------------------

def up(settings: Settings, only: list[str] | None = None, echo=print) -> None:
    steps = [("postgres", start_postgres), ("redis", start_redis), ("kafka", start_kafka),
             ("cassandra", start_cassandra)]
    failures = []
    for name, start in steps:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            outcome = start(settings)
            echo(f"  {name:<10} {outcome} ({time.monotonic() - t0:.1f} s)")
        except StackError as exc:
            failures.append(f"{name}: {exc}")
            echo(f"  {name:<10} FAILED: {str(exc).splitlines()[0]}")
    if failures:
        raise StackError("\n\n".join(failures))
    if not only or "kafka" in only:
        created = ensure_topics(settings)
        if created:
            echo(f"  topics     created {', '.join(created)} ({settings.kafka.partitions} partitions)")


def down(settings: Settings, echo=print) -> None:
    d = settings.stack.dir
    for name, pid_file in (("kafka", d / "kafka" / "kafka.pid"), ("cassandra", d / "cassandra" / "cassandra.pid"),
                           ("redis", d / "redis" / "redis.pid")):
        echo(f"  {name:<10} {'stopped' if _stop_pid(pid_file) else 'not running'}")
    echo(f"  {'postgres':<10} {'stopped' if stop_postgres(settings) else 'not running'}")


def status(settings: Settings) -> list[ServerStatus]:
    d = settings.stack.dir
    kh, kp = settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    ch, cp = settings.cassandra.contact_points[0], settings.cassandra.port
    ph, pp = settings.postgres.host_port
    rh, rp = settings.redis.host_port
    pg_pid_path = pg_home(settings) / "data" / "postmaster.pid"
    pg_pid = None
    if pg_pid_path.exists():
        try:
            pg_pid = int(pg_pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pg_pid = None
    rows = [
        ("kafka", kh, int(kp), _read_pid(d / "kafka" / "kafka.pid"), d / "kafka" / "logs" / "server.log"),
        ("cassandra", ch, cp, _read_pid(d / "cassandra" / "cassandra.pid"), d / "cassandra" / "logs" / "system.log"),
        ("postgres", ph, pp, pg_pid, pg_home(settings) / "logs" / "postgres.log"),
        ("redis", rh, rp, _read_pid(d / "redis" / "redis.pid"), d / "redis" / "logs" / "redis.log"),
    ]
    out = []
    for name, host, port, pid, log in rows:
        rss = _rss_mb(pid)
        if name == "postgres" and pid is not None:
            rss = _tree_rss_mb(pid)
        out.append(ServerStatus(name, f"{host}:{port}", _port_open(host, port), pid, rss, log))
    return out


def _tree_rss_mb(pid: int) -> float | None:
    """postgres is many processes; sum the RSS of the postmaster and its children."""
    total = _rss_mb(pid) or 0.0
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if Path(child, "stat").read_text().split()[3] == str(pid):
                total += _rss_mb(int(child.name)) or 0.0
        except (OSError, IndexError):
            continue
    return total or None
