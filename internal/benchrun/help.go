package benchrun

// Help is the long help of `meshd bench`: what is measured and every
// result key (README "Performance" quotes figures by these keys).
const Help = "Starts `meshd join` processes (this binary) on 127.0.0.1 with generated configs\n" +
	"in a temporary directory: an exporter in site a exporting `sink` and `echo` (both\n" +
	"served by the bench process) and an importer in site b importing them. Every\n" +
	"figure is measured through the import and, in the same run right before it,\n" +
	"directly against the target (key _direct), with the ratio meshd/direct (key\n" +
	"_ratio): the machine may be shared and noisy, the ratio is the comparable figure.\n" +
	"\n" +
	"  throughput  1 and 8 parallel streams into a discarding sink for --duration;\n" +
	"              MB/s = 10^6 bytes/s acknowledged by the sink (keys throughput_N_mbps)\n" +
	"  latency     64-byte echo round trips over 1 and 16 connections for --duration/2;\n" +
	"              p50/p99/max in microseconds (latency_N_p50_us, ...)\n" +
	"  connrate    --conn-workers concurrent clients (default 32): connect, one 64-byte\n" +
	"              round trip, close, for --duration/2; connections per second\n" +
	"              (conn_rate, per second)\n" +
	"  idle        --idle connections, each verified by a round trip, held --idle-hold,\n" +
	"              verified again, through --idle-nodes importer/exporter pairs of their\n" +
	"              own (see below)\n" +
	"\n" +
	"Idle connections (run first, on nodes started only for them, so that the RSS\n" +
	"figures are not inflated by the throughput runs): each of the --idle-nodes exporters\n" +
	"(site a) exports `echo` from its own backend process, the importers (site b) import\n" +
	"it with balance least_conn, and the connections are spread evenly over the importers\n" +
	"and held by client processes of at most 16,000 connections each, bound to source\n" +
	"addresses 127.0.0.2-254 in turn. No process holds more than its share, so a hard\n" +
	"RLIMIT_NOFILE of 20,000 allows up to ~19,000 connections per node: --idle 18000\n" +
	"(one pair) and --idle 100000 --idle-nodes 6 (6+6 nodes). Keys: idle_conns,\n" +
	"idle_setup_ms, idle_open_errors, idle_verify1_errors, idle_verify2_errors,\n" +
	"idle_backend_conns (held by the backends: the exporters' share), and RSS growth\n" +
	"per connection that node carried: idle_rss_per_conn_importer_bytes and\n" +
	"_exporter_bytes (mean over the nodes of the role), _importer_max_bytes,\n" +
	"_exporter_max_bytes, idle_rss_per_conn_mesh_bytes (growth of all nodes / conns);\n" +
	"with one pair idle_rss_{importer,exporter}_{before,after}_bytes, with more\n" +
	"idle_{importer,exporter}_N_conns and _N_rss_growth_bytes for each node.\n" +
	"\n" +
	"--netns (root, ip, /dev/net/tun) measures throughput, latency and connrate once more\n" +
	"between two network namespaces mb-<pid>-a (servers, exporters) and mb-<pid>-b\n" +
	"(clients, importers) joined by a veth pair 10.213.0.2 <-> 10.213.0.1, for four\n" +
	"paths in the same run: direct over the veth; plain wireguard-go on kernel TUN\n" +
	"devices (10.214.0.2 <-> .1, one bench-wgref process per namespace, no meshd) as\n" +
	"the reference for what WireGuard itself costs; meshd userspace; meshd kernel mode.\n" +
	"Clients and servers are bench-worker processes of this binary inside the\n" +
	"namespaces. Keys (FIG = netns_throughput_1, netns_throughput_8,\n" +
	"netns_latency_{1,16}_{p50,p99,max}, netns_conn_rate; UNIT = _mbps, _us or none):\n" +
	"  FIG UNIT, FIG_kernel UNIT, FIG_wireguard UNIT, FIG_direct UNIT   the figures\n" +
	"  FIG_vs_wireguard, FIG_kernel_vs_wireguard    meshd (userspace, kernel) / wireguard-go\n" +
	"  FIG_ratio, FIG_kernel_ratio, FIG_wireguard_ratio    the same / direct\n" +
	"  netns_errors (and FIG[_variant]_errors when not 0)\n" +
	"e.g. netns_throughput_1_wireguard_mbps, netns_latency_1_p50_vs_wireguard. The\n" +
	"namespaces, their veth and TUN devices and every process are removed at the end,\n" +
	"also on errors and Ctrl-C; namespaces of a killed earlier run are removed at start.\n" +
	"Traffic uses only loopback and the addresses above inside those namespaces.\n" +
	"--loopback=false skips the loopback measurements (namespaces only).\n" +
	"\n" +
	"scale (only with --only scale; not run by default): --nodes real `meshd join`\n" +
	"processes in 4 sites on loopback; the first node of each site exports echo, every\n" +
	"node imports it preferring its own site, then the next. Keys: scale_convergence_s\n" +
	"(last start -> every node sees all others alive, from the peers' state_since;\n" +
	"every *_seen_s key is the same moment as the status reads first showed it, later\n" +
	"by the polling's delay), scale_import_ok/_errors (an echo\n" +
	"round trip through every node's import), then over --scale-idle of idling:\n" +
	"scale_idle_cpu_pct_per_node (mean, % of one core), _max, _exporters, _others,\n" +
	"scale_idle_cpu_cores_total, scale_rss_mb_per_node, scale_rss_mb_max,\n" +
	"scale_gossip_{sent,recv}_bytes_per_s_per_node (gossip on the wire),\n" +
	"scale_sessions_per_node and _max (sessions up), and the first connection to a cold\n" +
	"peer (meshd ping's first round trip to a node without a session: one WireGuard and\n" +
	"one TCP handshake): scale_cold_first_conn_p50_ms, _max_ms, scale_cold_samples,\n" +
	"against a warm one: scale_warm_conn_p50_ms, scale_cold_first_conn_p50_ratio.\n" +
	"Then three failover phases (each on by default; --scale-drill=false,\n" +
	"--scale-sigstop=false, --scale-partition=false skip one), with client loops: a new\n" +
	"connection every 20 ms through a node's import, one tagged 64-byte round trip each\n" +
	"(timeout 10 s), the echo target telling which site served it.\n" +
	"  drill      4 non-exporters of s0 are reloaded to prefer [s1, s2] and carry loops\n" +
	"             while the first runs a 4 s drill of s1 (as meshd drill): the report's\n" +
	"             scale_drill_rto_ms, _failback_ms, _probes, _probes_failed; the clients'\n" +
	"             scale_drill_conns, scale_drill_failed, scale_drill_client_rto_ms (cut ->\n" +
	"             first connection served by another site, slowest loop; the cut is taken\n" +
	"             as the request + 550 ms), scale_drill_gap_max_ms (longest time a loop\n" +
	"             completed no connection); their imports are reloaded back afterwards\n" +
	"  sigstop    loops on 4 non-exporters of s2 while n002 (s2's exporter) is stopped for\n" +
	"             5 s (SIGSTOP, SIGCONT): scale_sigstop_rto_ms (stop -> first connection\n" +
	"             served by another site, slowest loop), _gap_max_ms, _conns, _failed,\n" +
	"             _failback_ms (SIGCONT -> served by s2 again), _reconverge_s\n" +
	"  partition  (root, nft; else scale_partition_skipped=REASON) nft table inet\n" +
	"             meshd_scale_<pid> drops UDP between the gossip and tunnel ports of\n" +
	"             {s0,s1} and {s2,s3} and TCP to every gossip port, until each half sees\n" +
	"             the other not alive (scale_partition_split_s, -1 if not within max(20 s, N x 0.5 s);\n" +
	"             scale_partition_held_s); then removed: scale_partition_heal_s (until\n" +
	"             every node sees all others alive). The table is removed on every way out.\n" +
	"  Errors of a phase: scale_drill_errors, scale_sigstop_errors, scale_partition_errors;\n" +
	"  scale_drill_skipped / scale_sigstop_skipped=REASON when --nodes is too small.\n" +
	"\n" +
	"Results go to stdout (one JSON object, or key=value lines); progress to stderr.\n" +
	"Exits 1 if any measurement had errors or a setup step failed (the results so far\n" +
	"are still printed, with setup_error), 2 for bad flags, 130 when interrupted."
