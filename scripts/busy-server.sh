# Sourced by the bench scripts: the busy server both measure, nginx (Debian's nginx-light)
# answering each request and closing first (keepalive_timeout 0), its files under one folder.

# write_nginx_conf DIR: DIR/nginx.conf for a server on 127.0.0.1:8080.
write_nginx_conf() {
  local dir=$1
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir;
  proxy_temp_path $dir;
  fastcgi_temp_path $dir;
  uwsgi_temp_path $dir;
  scgi_temp_path $dir;
  keepalive_timeout 0;
  server {
    listen 127.0.0.1:8080;
    location / { return 200 "ok\n"; }
  }
}
CONF
}
