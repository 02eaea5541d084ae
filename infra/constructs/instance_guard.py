"""Keeps the worker's containers away from the instance metadata service, and so from the instance role.

AWS Batch runs EC2 jobs with host networking: a container's packets leave from the instance itself,
so IMDSv2's hop limit does not stop them, and the instance role (which the ECS agent needs: it can
register and deregister container instances account-wide) would be one HTTP call away. The launch
template's user data therefore installs a boot-time service that rejects metadata traffic
- from processes of the worker's uid (host networking: the OUTPUT chain matches the socket's owner), and
- forwarded from Docker bridges (bridge networking), in DOCKER-USER, ahead of Docker's own rules.
It runs before docker.service and ecs.service on every boot, and it fails closed: a drop-in makes
ecs.service require it, so when the rules cannot be installed the ECS agent does not start, the instance
never registers and no job runs on it (its jobs wait RUNNABLE, which the WorkersStuckRunnable alarm
reports). Ordering alone (`Before=`) would not do: systemd starts a unit after a failed one it is only
ordered after. The ECS agent (root) keeps IMDS; jobs get their credentials from the ECS credentials
endpoint (169.254.170.2) instead.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2

# The Dockerfile's `USER` (gpu_batch/Dockerfile); tests check both agree. A worker running as any other
# uid, or as root, or privileged, would not be covered: the job definition must keep this user.
WORKER_UID = 10001
IMDS_ADDRESS = "169.254.169.254/32"
SERVICE_NAME = "upscaler-block-imds"
SCRIPT_PATH = f"/usr/local/sbin/{SERVICE_NAME}"

# Idempotent (check, then insert): the service may run again on a reboot.
IMDS_BLOCK_SCRIPT = f"""#!/bin/bash
set -eu
add() {{ iptables -C "$@" 2>/dev/null || iptables -I "$@"; }}
add OUTPUT -d {IMDS_ADDRESS} -m owner --uid-owner {WORKER_UID} -j REJECT
iptables -N DOCKER-USER 2>/dev/null || true
add DOCKER-USER -i docker+ -d {IMDS_ADDRESS} -j REJECT
"""

SYSTEMD_UNIT = f"""[Unit]
Description=Reject instance metadata traffic from upscaler worker containers
Before=docker.service ecs.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={SCRIPT_PATH}

[Install]
WantedBy=multi-user.target
"""

# systemd.unit(5): with Requires= and After= together, the dependent unit is not started when the required
# one fails. ecs.service starts after cloud-final, so this drop-in is in place before it is first started.
AGENT_DROP_IN_PATH = f"/etc/systemd/system/ecs.service.d/10-{SERVICE_NAME}.conf"
AGENT_DROP_IN = f"""[Unit]
Requires={SERVICE_NAME}.service
After={SERVICE_NAME}.service
"""


# A spot reclaim gives two minutes' notice. With draining on, the ECS agent stops the instance's tasks at
# the notice (SIGTERM) instead of at shutdown, and waits up to the stop timeout before SIGKILL: the worker
# gives its image back and frees its slot within it (the default timeout is 30 s).
ECS_AGENT_CONFIG = {"ECS_ENABLE_SPOT_INSTANCE_DRAINING": "true", "ECS_CONTAINER_STOP_TIMEOUT": "110s"}


def instance_user_data() -> ec2.MultipartUserData:
    """The launch template's user data (Batch requires MIME multi-part; it appends its own ECS part)."""
    script = ec2.UserData.for_linux()
    script.add_commands(
        "set -euo pipefail",
        *(f"echo {name}={value} >> /etc/ecs/ecs.config" for name, value in ECS_AGENT_CONFIG.items()),
        f"cat > {SCRIPT_PATH} <<'SCRIPT'\n{IMDS_BLOCK_SCRIPT}SCRIPT",
        f"chmod 0755 {SCRIPT_PATH}",
        f"cat > /etc/systemd/system/{SERVICE_NAME}.service <<'UNIT'\n{SYSTEMD_UNIT}UNIT",
        f"mkdir -p {AGENT_DROP_IN_PATH.rsplit('/', 1)[0]}",
        f"cat > {AGENT_DROP_IN_PATH} <<'UNIT'\n{AGENT_DROP_IN}UNIT",
        "systemctl daemon-reload",
        f"systemctl enable --now {SERVICE_NAME}.service",
    )
    user_data = ec2.MultipartUserData()
    user_data.add_user_data_part(script, ec2.MultipartBody.SHELL_SCRIPT, True)
    return user_data
