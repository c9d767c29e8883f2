-- Prosody 0.12 (Debian) under benchmark. compare.py fills in the @...@ placeholders below.
-- Same ground as mbeon-chat: TLS required (STARTTLS, the same self-signed EC certificate), SCRAM-SHA-1
-- credentials with 4096 iterations, log level warn, no rate limits (mod_limits not loaded), MUC on
-- groups.localhost, no server-to-server.

pidfile = "@DATA_DIR@/prosody.pid"
data_path = "@DATA_DIR@/data"
run_as_root = true
log = { warn = "@DATA_DIR@/prosody.log" }
network_backend = "epoll"
network_settings = { tcp_backlog = 1024 }

interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
c2s_require_encryption = true
c2s_stanza_size_limit = 262144

authentication = "internal_hashed"
default_iteration_count = 4096
storage = "internal"

ssl = {
	certificate = "@CERT@";
	key = "@KEY@";
}

modules_enabled = {
	"roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "version"; "posix";
	@EXTRA_MODULES@
}
modules_disabled = { "s2s"; "admin_shell"; "admin_socket" }

-- archive phase (mod_mam loaded): archive every message, keep it
default_archive_policy = true
archive_expires_after = "never"
max_archive_query_results = 100

VirtualHost "localhost"

Component "groups.localhost" "muc"
	restrict_room_creation = false
	muc_room_default_persistent = false
	muc_room_default_public = true
	muc_room_default_history_length = 20
