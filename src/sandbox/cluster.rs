//! A private Redis Cluster on loopback, built from `redis-server` on free ports: for the tests
//! that run the redis store on a cluster and for experiments that kill a master. Dropping it
//! kills its nodes and removes their folder; a watchdog does the same when the owning process
//! ends first (a cluster kept in a `static` is never dropped).

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use redis::aio::MultiplexedConnection;
use tempfile::TempDir;

/// Redis Cluster's number of hash slots.
const SLOTS: u16 = 16_384;
/// How long forming the cluster may take (nodes up, handshakes, replicas in sync).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a forming or failing-over cluster is looked at.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Client ports are drawn from here; a node's bus listens on its port + 10000. Both ranges lie
/// below Linux's ephemeral ports (32768 and up), so outgoing connections never take them.
const PORTS: std::ops::Range<u16> = 15_000..22_000;
const BUS_OFFSET: u16 = 10_000;

/// What cluster to build.
#[derive(Debug, Clone, Copy)]
pub struct ClusterShape {
    /// Masters; the slots are split evenly among them.
    pub masters: usize,
    /// Replicas of each master (0 for none).
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a master may be silent before its replica takes over.
    pub node_timeout: Duration,
}

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    child: Child,
    /// For a replica: the port of the master it was made to follow.
    follows: Option<u16>,
}

/// A running local Redis Cluster.
pub struct RedisCluster {
    nodes: Vec<Node>,
    masters: usize,
    watchdog: Option<Child>,
    // Removed last, after the nodes are gone.
    dir: TempDir,
}

impl RedisCluster {
    /// Starts the nodes, assigns the slots, joins the nodes and the replicas, and waits until
    /// every node reports `cluster_state:ok` and every replica is in sync.
    pub async fn start(shape: ClusterShape) -> anyhow::Result<Self> {
        ensure!(shape.masters > 0, "a cluster needs a master");
        let mut last_error = None;
        // A port taken between the check and the start fails the node: try other ports.
        for _ in 0..3 {
            match Self::try_start(shape).await {
                Ok(cluster) => return Ok(cluster),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    async fn try_start(shape: ClusterShape) -> anyhow::Result<Self> {
        let count = shape.masters * (1 + shape.replicas_per_master);
        let dir = tempfile::Builder::new()
            .prefix("statecart-redis-cluster-")
            .tempdir()
            .context("a folder for the cluster")?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(count),
            masters: shape.masters,
            watchdog: None,
            dir,
        };
        for port in free_ports(count)? {
            let node_dir = cluster.dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir)?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args([
                    "--cluster-node-timeout",
                    &shape.node_timeout.as_millis().to_string(),
                ])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .args(["--logfile", "redis.log"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server (is it installed?)")?;
            cluster.nodes.push(Node {
                port,
                child,
                follows: None,
            });
        }
        cluster.watchdog = Some(cluster.start_watchdog()?);
        cluster.form(shape).await?;
        Ok(cluster)
    }

    /// A shell that waits for this process to end, then kills the nodes and removes the
    /// folder: the cleanup of a cluster that is never dropped.
    fn start_watchdog(&self) -> anyhow::Result<Child> {
        let script = r#"owner=$1; dir=$2; shift 2
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
kill -9 "$@" 2>/dev/null
sleep 1
rm -rf "$dir""#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("statecart-cluster-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.dir.path());
        for node in &self.nodes {
            cmd.arg(node.child.id().to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the cluster's watchdog")
    }

    async fn form(&mut self, shape: ClusterShape) -> anyhow::Result<()> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let mut conns = Vec::with_capacity(self.nodes.len());
        for i in 0..self.nodes.len() {
            conns.push(self.connect_when_up(i, deadline).await?);
        }
        // Slots split evenly over the masters; distinct epochs, as `redis-cli --cluster create`
        // sets them, so no two masters claim a slot with the same epoch.
        let per_master = usize::from(SLOTS) / shape.masters;
        for (i, conn) in conns.iter_mut().enumerate() {
            if i < shape.masters {
                let first = i * per_master;
                let last = if i + 1 == shape.masters {
                    usize::from(SLOTS) - 1
                } else {
                    first + per_master - 1
                };
                let () = redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last)
                    .query_async(conn)
                    .await?;
            }
            let () = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .query_async(conn)
                .await?;
        }
        for node in &self.nodes[1..] {
            let () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port)
                .query_async(&mut conns[0])
                .await?;
        }
        let count = self.nodes.len();
        for conn in &conns {
            wait_until(deadline, "every node to know every other", || {
                let mut conn = conn.clone();
                async move {
                    let nodes: String = redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async(&mut conn)
                        .await?;
                    Ok(nodes.lines().count() == count && !nodes.contains("handshake"))
                }
            })
            .await?;
        }
        // Replica r of master m is node masters + m * replicas + r.
        for m in 0..shape.masters {
            for r in 0..shape.replicas_per_master {
                let master = self.nodes[m].port;
                self.nodes[shape.masters + m * shape.replicas_per_master + r].follows =
                    Some(master);
            }
            let id: String = redis::cmd("CLUSTER")
                .arg("MYID")
                .query_async(&mut conns[m])
                .await?;
            for r in 0..shape.replicas_per_master {
                let conn = &conns[shape.masters + m * shape.replicas_per_master + r];
                wait_until(deadline, "a replica to follow its master", || {
                    let (mut conn, id) = (conn.clone(), id.clone());
                    async move {
                        let answer: redis::RedisResult<()> = redis::cmd("CLUSTER")
                            .arg("REPLICATE")
                            .arg(id)
                            .query_async(&mut conn)
                            .await;
                        Ok(answer.is_ok())
                    }
                })
                .await?;
            }
        }
        for (i, conn) in conns.iter().enumerate() {
            let replica = i >= shape.masters;
            wait_until(deadline, "the cluster to be ok", || {
                let mut conn = conn.clone();
                async move {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await?;
                    let mut ok = info.contains("cluster_state:ok");
                    if replica {
                        let repl: String = redis::cmd("INFO")
                            .arg("replication")
                            .query_async(&mut conn)
                            .await?;
                        ok &= repl.contains("master_link_status:up");
                    }
                    Ok(ok)
                }
            })
            .await?;
        }
        Ok(())
    }

    /// A connection to node `i` once it answers `PING`; an error if it exited.
    async fn connect_when_up(
        &mut self,
        i: usize,
        deadline: Instant,
    ) -> anyhow::Result<MultiplexedConnection> {
        let url = node_url(self.nodes[i].port);
        loop {
            if let Some(status) = self.nodes[i].child.try_wait()? {
                bail!("redis-server on {url} exited: {status}");
            }
            if let Ok(conn) = connect(&url).await {
                return Ok(conn);
            }
            ensure!(
                Instant::now() < deadline,
                "redis-server on {url} never answered"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// `redis_url` for a cluster client: every master as a seed node, comma-separated.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..self.masters]
            .iter()
            .map(|n| node_url(n.port))
            .collect();
        seeds.join(",")
    }

    /// The ports of the masters the cluster started with.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes[..self.masters].iter().map(|n| n.port).collect()
    }

    /// The ports of the nodes that are masters with slots now, as a live node sees it.
    pub async fn masters_now(&self) -> anyhow::Result<Vec<u16>> {
        for node in &self.nodes {
            let Ok(mut conn) = connect(&node_url(node.port)).await else {
                continue;
            };
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut conn)
                .await?;
            return Ok(masters_in(&nodes));
        }
        bail!("no node of the cluster answers")
    }

    /// The ports of the replicas made to follow the master on `port` when the cluster formed.
    pub fn replica_ports(&self, port: u16) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.follows == Some(port))
            .map(|n| n.port)
            .collect()
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the node on `port`: a node that falls behind, as
    /// a slow network or a long pause would make it.
    pub fn freeze(&self, port: u16, frozen: bool) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .with_context(|| format!("no node on port {port}"))?;
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .arg(signal)
            .arg(node.child.id().to_string())
            .status()?;
        ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// Kills (SIGKILL) the node on `port`: a crash, as far as the cluster can tell.
    pub fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .with_context(|| format!("no node on port {port}"))?;
        node.child.kill()?;
        node.child.wait()?;
        Ok(())
    }

    /// Waits until every live replica has every write its master acknowledged so far (its
    /// replication offset caught up), so a failover from here loses nothing.
    pub async fn wait_replicated(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for port in self.masters_now().await? {
            let conn = connect(&node_url(port)).await?;
            wait_until(deadline, "the replicas to catch up", || {
                let mut conn = conn.clone();
                async move {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut conn)
                        .await?;
                    Ok(replicas_caught_up(&info))
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until every live node reports `cluster_state:ok` (after a failover).
    pub async fn wait_ok(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for node in &self.nodes {
            let Ok(conn) = connect(&node_url(node.port)).await else {
                continue;
            };
            wait_until(deadline, "the cluster to be ok", || {
                let mut conn = conn.clone();
                async move {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await?;
                    Ok(info.contains("cluster_state:ok"))
                }
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            // Already gone when a test killed it; SIGKILL ends a frozen node too.
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if let Some(watchdog) = &mut self.watchdog {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // `dir` is removed by its own drop, now that no node writes into it.
    }
}

/// `redis://127.0.0.1:<port>`.
pub fn node_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Polls `check` until it says yes; errors count as "not yet". Fails after `deadline`.
async fn wait_until<F, Fut>(deadline: Instant, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<bool>>,
{
    loop {
        if matches!(check().await, Ok(true)) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `count` distinct ports whose bus port (+10000) is free as well.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(count);
    for _ in 0..1000 {
        if ports.len() == count {
            break;
        }
        let port = rand::random_range(PORTS);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + BUS_OFFSET) {
            ports.push(port);
        }
    }
    ensure!(ports.len() == count, "found no {count} free ports");
    Ok(ports)
}

/// The client ports of the masters that serve slots, from `CLUSTER NODES`.
fn masters_in(nodes: &str) -> Vec<u16> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let serves = fields.len() > 8 && flags.contains("master") && !flags.contains("fail");
            // `127.0.0.1:7000@17000`
            let port = fields.get(1)?.split(['@']).next()?.rsplit(':').next()?;
            serves.then(|| port.parse().ok()).flatten()
        })
        .collect()
}

/// Whether every replica listed in a master's `INFO replication` has its offset.
fn replicas_caught_up(info: &str) -> bool {
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split([',', ':'])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .trim()
            .parse()
            .ok()
    };
    let Some(master) = info.lines().find_map(|l| {
        l.strip_prefix("master_repl_offset:")
            .and_then(|v| v.trim().parse::<u64>().ok())
    }) else {
        return false;
    };
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("offset="))
        .all(|l| field(l, "offset").is_some_and(|o| o >= master))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_with_slots_are_read_from_cluster_nodes() {
        let nodes = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master,fail - 0 0 2 connected
c 127.0.0.1:7003@17003 slave a 0 0 1 connected
d 127.0.0.1:7004@17004 master - 0 0 4 connected 5461-10922
";
        assert_eq!(masters_in(nodes), [7000, 7004]);
    }

    #[test]
    fn replicas_are_caught_up_when_their_offset_reached_the_masters() {
        let behind = "role:master\r\nslave0:ip=127.0.0.1,port=7003,state=online,offset=90,lag=0\r\nmaster_repl_offset:100\r\n";
        let level = behind.replace("offset=90", "offset=100");
        assert!(!replicas_caught_up(behind));
        assert!(replicas_caught_up(&level));
    }
}
