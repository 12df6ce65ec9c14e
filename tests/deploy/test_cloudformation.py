"""deploy/cloudformation/registry.yaml: the properties operators and clients rely on.

The static tests read the template with cfn-lint's loader (it understands !Ref, !Sub, ... and yields the
long form, {"Ref": ...}). The last test creates the stack in moto's CloudFormation emulation and reads the
resources back through the AWS APIs. moto drops several properties on the way (the service's launch type,
network and deployment configuration and load balancers, the task definition's runtime platform and
network mode) and does not create autoscaling targets, scaling policies or alarms, so those are checked
statically only.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml

from hokusai_registry.deploy.plan import artifact_serving_problems
from hokusai_registry.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "cloudformation" / "registry.yaml"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

SECRET_ENV = {
    "HOKUSAI_REGISTRY_BACKEND_STORE_URI": "DatabaseUriSecretArn",
    "HOKUSAI_REGISTRY_FLASK_SECRET_KEY": "FlaskSecretKeySecretArn",
    "HOKUSAI_REGISTRY_ADMIN_PASSWORD": "AdminPasswordSecretArn",
    "HOKUSAI_REGISTRY_KEY_HASH_SECRET": "KeyHashSecretArn",
}
OBJECT_ARN = "arn:${AWS::Partition}:s3:::${ArtifactsBucketName}/${ArtifactsPrefix}/*"
BUCKET_ARN = "arn:${AWS::Partition}:s3:::${ArtifactsBucketName}"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return loaded


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_}


def only(template: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    found = resources(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    name, resource = next(iter(found.items()))
    return name, resource["Properties"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


ECS_EXEC_ACTIONS = {
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}
NO_RESOURCE_LEVEL_ACTIONS = {"ecr:GetAuthorizationToken"} | ECS_EXEC_ACTIONS


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """The role's inline statements; a conditional one (Fn::If) counts as present."""
    found = []
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                statement = statement["Fn::If"][1]
            found.append(statement)
    return found


def container(template: dict[str, Any]) -> dict[str, Any]:
    _, task = only(template, "AWS::ECS::TaskDefinition")
    (registry,) = task["ContainerDefinitions"]
    return registry  # type: ignore[no-any-return]


def listener_actions(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for type_, key in (
        ("AWS::ElasticLoadBalancingV2::Listener", "DefaultActions"),
        ("AWS::ElasticLoadBalancingV2::ListenerRule", "Actions"),
    ):
        for name, resource in resources(template, type_).items():
            for action in resource["Properties"][key]:
                yield name, action


# --- load balancer ---------------------------------------------------------------------------------


def test_target_group_health_checks_health_on_the_registry_port(template: dict[str, Any]) -> None:
    _, group = only(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert group["HealthCheckPath"] == "/health"
    assert group["Matcher"] == {"HttpCode": "200"}
    assert (group["Port"], group["Protocol"], group["TargetType"]) == (5000, "HTTP", "ip")


def test_https_listener_forwards_every_path_to_the_registry(template: dict[str, Any]) -> None:
    group, _ = only(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    listeners = resources(template, "AWS::ElasticLoadBalancingV2::Listener")
    (https,) = [r["Properties"] for r in listeners.values() if r["Properties"]["Port"] == 443]
    assert https["Protocol"] == "HTTPS"
    assert https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert https["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": group}}]


def test_http_listener_only_redirects_to_https(template: dict[str, Any]) -> None:
    listeners = resources(template, "AWS::ElasticLoadBalancingV2::Listener")
    assert sorted(r["Properties"]["Port"] for r in listeners.values()) == [80, 443]
    (http,) = [r["Properties"] for r in listeners.values() if r["Properties"]["Port"] == 80]
    (action,) = http["DefaultActions"]
    assert action["Type"] == "redirect"
    redirect = action["RedirectConfig"]
    assert (redirect["Protocol"], redirect["Port"], redirect["StatusCode"]) == ("HTTPS", "443", "HTTP_301")
    # The same host, path and query: only the scheme changes.
    assert (redirect["Host"], redirect["Path"], redirect["Query"]) == ("#{host}", "/#{path}", "#{query}")


def test_no_listener_or_rule_routes_around_the_registry(template: dict[str, Any]) -> None:
    """F12: a fixed response, another target group or an unauthenticated shortcut would bypass auth."""
    group, _ = only(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    actions = list(listener_actions(template))
    assert actions
    for name, action in actions:
        if action["Type"] == "redirect":
            assert action["RedirectConfig"]["Protocol"] == "HTTPS", name
            continue
        assert action["Type"] == "forward", f"{name}: {action['Type']}"
        targets = [action.get("TargetGroupArn")] if "TargetGroupArn" in action else []
        targets += [t["TargetGroupArn"] for t in action.get("ForwardConfig", {}).get("TargetGroups", [])]
        assert targets and all(t == {"Ref": group} for t in targets), name


def test_load_balancer_drops_invalid_headers_and_allows_long_uploads(template: dict[str, Any]) -> None:
    _, lb = only(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"] if "Key" in a}
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["deletion_protection.enabled"] == {"Ref": "DeletionProtection"}
    assert template["Parameters"]["DeletionProtection"]["Default"] == "true"
    assert attributes["idle_timeout.timeout_seconds"] == {"Ref": "LoadBalancerIdleTimeoutSeconds"}
    assert template["Parameters"]["LoadBalancerIdleTimeoutSeconds"]["Default"] >= 300  # F9


def test_tasks_keep_idle_connections_longer_than_the_load_balancer(template: dict[str, Any]) -> None:
    """The ALB reuses idle connections until its idle timeout; a task must not close one first."""
    env = {e["Name"]: e["Value"] for e in container(template)["Environment"]}
    assert env["HOKUSAI_REGISTRY_LB_IDLE_TIMEOUT_SECONDS"] == {"Ref": "LoadBalancerIdleTimeoutSeconds"}
    parameter = template["Parameters"]["LoadBalancerIdleTimeoutSeconds"]
    for seconds in (parameter["MinValue"], parameter["Default"], parameter["MaxValue"]):
        settings = Settings(lb_idle_timeout_seconds=seconds)  # refused if outside the setting's range
        assert settings.keep_alive_seconds > seconds


def test_only_the_load_balancer_reaches_the_tasks(template: dict[str, Any]) -> None:
    groups = resources(template, "AWS::EC2::SecurityGroup")
    lb_rules = groups["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert sorted(r["FromPort"] for r in lb_rules) == [80, 443]
    assert all(r["CidrIp"] == {"Ref": "IngressCidr"} and r["FromPort"] == r["ToPort"] for r in lb_rules)
    assert "SecurityGroupIngress" not in groups["ServiceSecurityGroup"]["Properties"]
    into_service = [
        r["Properties"]
        for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Ref": "ServiceSecurityGroup"}
    ]
    assert into_service == [
        {
            "Description": into_service[0]["Description"],
            "GroupId": {"Ref": "ServiceSecurityGroup"},
            "IpProtocol": "tcp",
            "FromPort": 5000,
            "ToPort": 5000,
            "SourceSecurityGroupId": {"Ref": "LoadBalancerSecurityGroup"},
        }
    ]
    _, service = only(template, "AWS::ECS::Service")
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert network["Subnets"] == {"Ref": "PrivateSubnetIds"}


# --- ECS -------------------------------------------------------------------------------------------


def test_service_rolls_back_by_itself_and_starts_before_it_stops(template: dict[str, Any]) -> None:
    _, service = only(template, "AWS::ECS::Service")
    deployment = service["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert (deployment["MinimumHealthyPercent"], deployment["MaximumPercent"]) == (100, 200)
    assert service["HealthCheckGracePeriodSeconds"] == {"Ref": "HealthCheckGracePeriodSeconds"}
    assert service["LaunchType"] == "FARGATE"
    group, _ = only(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    (target,) = service["LoadBalancers"]
    assert target == {
        "ContainerName": container(template)["Name"],
        "ContainerPort": 5000,
        "TargetGroupArn": {"Ref": group},
    }


def test_task_runs_linux_amd64_on_fargate(template: dict[str, Any]) -> None:
    _, task = only(template, "AWS::ECS::TaskDefinition")
    assert task["RuntimePlatform"] == {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"


def test_container_keeps_artifact_serving_on(template: dict[str, Any]) -> None:
    registry = container(template)
    # The image's entrypoint runs `up`, which always serves artifacts; nothing here may replace it.
    assert "Command" not in registry
    assert "EntryPoint" not in registry
    env = {e["Name"]: e["Value"] for e in registry["Environment"]}
    assert "HOKUSAI_REGISTRY_SERVE_ARTIFACTS" not in env
    assert "HOKUSAI_REGISTRY_DEFAULT_ARTIFACT_ROOT" not in env
    assert env["HOKUSAI_REGISTRY_ARTIFACTS_DESTINATION"] == {
        "Fn::Sub": "s3://${ArtifactsBucketName}/${ArtifactsPrefix}"
    }
    # The same check `deploy ecs` applies before it registers a revision.
    as_ecs = {"environment": [{"name": n, "value": str(v)} for n, v in env.items()]}
    assert artifact_serving_problems(as_ecs) == []
    assert registry["Image"] == {"Ref": "ImageUri"}
    assert registry["PortMappings"] == [{"ContainerPort": 5000, "Protocol": "tcp"}]


def test_public_host_name_is_allowed(template: dict[str, Any]) -> None:
    """F7: without it MLflow answers every request through the load balancer with 403."""
    env = {e["Name"]: e["Value"] for e in container(template)["Environment"]}
    assert env["HOKUSAI_REGISTRY_ALLOWED_HOSTS"] == {"Fn::Sub": "${PublicHostName},${PublicHostName}:443"}


def test_secrets_come_from_secrets_manager(template: dict[str, Any]) -> None:
    registry = container(template)
    secrets = {s["Name"]: s["ValueFrom"] for s in registry["Secrets"]}
    assert secrets == {name: {"Ref": parameter} for name, parameter in SECRET_ENV.items()}
    assert not set(SECRET_ENV) & {e["Name"] for e in registry["Environment"]}, "a secret in plain text"
    for parameter in SECRET_ENV.values():
        assert "Default" not in template["Parameters"][parameter]


def test_container_sets_every_variable_the_entrypoint_requires(template: dict[str, Any]) -> None:
    loop = re.search(r"for name in \\\n(.*?); do", ENTRYPOINT.read_text(), re.S)
    assert loop, "entrypoint.sh's list of required variables moved"
    required = set(re.findall(r"HOKUSAI_REGISTRY_\w+", loop.group(1)))
    registry = container(template)
    provided = {e["Name"] for e in registry["Environment"]} | {s["Name"] for s in registry["Secrets"]}
    assert len(required) >= 5
    assert required <= provided


def test_logs_are_kept_and_encrypted(template: dict[str, Any]) -> None:
    name, group = only(template, "AWS::Logs::LogGroup")
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert template["Parameters"]["LogRetentionDays"]["Default"] >= 365
    key, _ = only(template, "AWS::KMS::Key")
    assert group["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    options = container(template)["LogConfiguration"]["Options"]
    assert options["awslogs-group"] == {"Ref": name}


# --- IAM -------------------------------------------------------------------------------------------


def test_no_role_grants_wildcard_actions(template: dict[str, Any]) -> None:
    for name, role in resources(template, "AWS::IAM::Role").items():
        for statement in statements(role):
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{name}: {action}"
            if statement["Resource"] == "*":  # only for actions without resource-level permissions
                assert set(as_list(statement["Action"])) <= NO_RESOURCE_LEVEL_ACTIONS, name


def test_task_role_reaches_only_the_artifact_prefix(template: dict[str, Any]) -> None:
    role = template["Resources"]["TaskRole"]
    assert template["Resources"]["TaskDefinition"]["Properties"]["TaskRoleArn"] == {
        "Fn::GetAtt": ["TaskRole", "Arn"]
    }
    s3 = [s for s in statements(role) if any(a.startswith("s3:") for a in as_list(s["Action"]))]
    assert s3
    for statement in s3:
        actions = set(as_list(statement["Action"]))
        assert all(a.startswith("s3:") for a in actions)
        if actions == {"s3:ListBucket"}:
            assert statement["Resource"] == {"Fn::Sub": BUCKET_ARN}
            prefix = {"Fn::Sub": "${ArtifactsPrefix}/*"}
            assert statement["Condition"] == {"StringLike": {"s3:prefix": prefix}}
        else:
            assert actions <= {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
            assert statement["Resource"] == {"Fn::Sub": OBJECT_ARN}
    others = [s for s in statements(role) if s not in s3]
    allowed = {"kms:Decrypt", "kms:GenerateDataKey"} | ECS_EXEC_ACTIONS
    assert all(set(as_list(s["Action"])) <= allowed for s in others)


def test_ecs_exec_is_off_unless_asked_for(template: dict[str, Any]) -> None:
    """ECS Exec is how an operator creates the first key without it reaching a log; it is opt-in."""
    assert template["Parameters"]["EnableEcsExec"]["Default"] == "false"
    service = template["Resources"]["Service"]["Properties"]
    assert service["EnableExecuteCommand"] == {"Fn::If": ["EcsExec", True, False]}
    for policy in template["Resources"]["TaskRole"]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = set(as_list(statement.get("Action", [])))
            assert not actions & ECS_EXEC_ACTIONS, "ECS Exec permissions must be conditional"
            if "Fn::If" in statement and set(as_list(statement["Fn::If"][1]["Action"])) <= ECS_EXEC_ACTIONS:
                assert statement["Fn::If"][0] == "EcsExec"
                assert statement["Fn::If"][2] == {"Ref": "AWS::NoValue"}


def test_execution_role_reads_only_the_registry_secrets(template: dict[str, Any]) -> None:
    role = template["Resources"]["TaskExecutionRole"]
    reading = [s for s in statements(role) if "secretsmanager:GetSecretValue" in as_list(s["Action"])]
    assert len(reading) == 1
    assert as_list(reading[0]["Action"]) == ["secretsmanager:GetSecretValue"]
    assert sorted(r["Ref"] for r in reading[0]["Resource"]) == sorted(SECRET_ENV.values())


def test_every_checkov_skip_is_explained_in_the_template_and_the_docs(template: dict[str, Any]) -> None:
    doc = DEPLOY_DOC.read_text()
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "").split()) >= 5, f"{name}: {skip['id']} needs a reason"
            assert skip["id"] in doc, f"{skip['id']} is not listed in docs/deploy.md"


# --- autoscaling and alarms -------------------------------------------------------------------------

LB_FULL_NAME = {"Fn::GetAtt": ["LoadBalancer", "LoadBalancerFullName"]}
TG_FULL_NAME = {"Fn::GetAtt": ["TargetGroup", "TargetGroupFullName"]}
ALB_DIMENSIONS = [
    {"Name": "LoadBalancer", "Value": LB_FULL_NAME},
    {"Name": "TargetGroup", "Value": TG_FULL_NAME},
]
TO_TOPIC = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def not_empty(parameter: str) -> dict[str, Any]:
    return {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}


def alarm_watching(template: dict[str, Any], metric: str) -> dict[str, Any]:
    """The one alarm whose metric (or one of whose math expression's metrics) is ``metric``."""
    found = []
    for name, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        metrics = [properties.get("MetricName")]
        metrics += [
            m["MetricStat"]["Metric"]["MetricName"]
            for m in properties.get("Metrics", [])
            if "MetricStat" in m
        ]
        if metric in metrics:
            found.append(name)
    assert len(found) == 1, f"expected one alarm on {metric}, found {found}"
    return template["Resources"][found[0]]  # type: ignore[no-any-return]


def test_scaling_target_takes_its_range_from_the_parameters(template: dict[str, Any]) -> None:
    _, target = only(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["ServiceNamespace"], target["ScalableDimension"]) == ("ecs", "ecs:service:DesiredCount")
    assert target["ResourceId"] == {"Fn::Sub": "service/${Cluster}/${Service.Name}"}
    assert target["MinCapacity"] == {"Ref": "MinTaskCount"}
    assert target["MaxCapacity"] == {"Ref": "MaxTaskCount"}
    parameters = template["Parameters"]
    assert (parameters["MinTaskCount"]["Default"], parameters["MaxTaskCount"]["Default"]) == (2, 6)
    assert "MinTaskCount" in parameters["MaxTaskCount"]["Description"]


def test_autoscaling_owns_the_task_count(template: dict[str, Any]) -> None:
    """Unless DesiredCount is set, the service is created with 1 task (the first start migrates alone)
    and a stack update never sends a count that would undo autoscaling's."""
    service = template["Resources"]["Service"]["Properties"]
    assert service["DesiredCount"] == {
        "Fn::If": ["HasDesiredCount", {"Ref": "DesiredCount"}, {"Ref": "AWS::NoValue"}]
    }
    assert template["Conditions"]["HasDesiredCount"] == not_empty("DesiredCount")
    assert template["Parameters"]["DesiredCount"]["Default"] == ""


def test_two_target_tracking_policies_scale_the_service(template: dict[str, Any]) -> None:
    target, _ = only(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    policies = [
        r["Properties"] for r in resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    ]
    by_metric = {}
    for policy in policies:
        assert policy["PolicyType"] == "TargetTrackingScaling"
        assert policy["ScalingTargetId"] == {"Ref": target}
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        by_metric[config["PredefinedMetricSpecification"]["PredefinedMetricType"]] = config
    assert sorted(by_metric) == ["ALBRequestCountPerTarget", "ECSServiceAverageCPUUtilization"]
    requests = by_metric["ALBRequestCountPerTarget"]
    assert requests["TargetValue"] == {"Ref": "TargetRequestsPerTask"}
    # app/<lb name>/<lb id>/targetgroup/<tg name>/<tg id>: this stack's load balancer and target group.
    label = requests["PredefinedMetricSpecification"]["ResourceLabel"]
    assert label == {"Fn::Join": ["/", [LB_FULL_NAME, TG_FULL_NAME]]}
    assert by_metric["ECSServiceAverageCPUUtilization"]["TargetValue"] == {"Ref": "TargetCpuPercent"}
    for config in by_metric.values():
        assert config["ScaleOutCooldown"] < config["ScaleInCooldown"]


def test_target_5xx_rate_alarm_divides_errors_by_requests(template: dict[str, Any]) -> None:
    alarm = alarm_watching(template, "HTTPCode_Target_5XX_Count")["Properties"]
    queries = {m["Id"]: m for m in alarm["Metrics"]}
    stats = {m["MetricStat"]["Metric"]["MetricName"]: m for m in alarm["Metrics"] if "MetricStat" in m}
    assert sorted(stats) == ["HTTPCode_Target_5XX_Count", "RequestCount"]
    for query in stats.values():
        stat = query["MetricStat"]
        assert stat["Metric"]["Namespace"] == "AWS/ApplicationELB"
        assert stat["Metric"]["Dimensions"] == ALB_DIMENSIONS
        assert (stat["Period"], stat["Stat"], query["ReturnData"]) == (300, "Sum", False)
    (returned,) = [q for q in queries.values() if q.get("ReturnData")]
    errors, requests = stats["HTTPCode_Target_5XX_Count"]["Id"], stats["RequestCount"]["Id"]
    expression = returned["Expression"]
    assert re.search(rf"100 \* FILL\({errors}, 0\) / {requests}$", expression), expression
    assert alarm["Threshold"] == {"Ref": "Alarm5xxPercent"}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert template["Parameters"]["Alarm5xxPercent"]["Default"] == 2


def test_unhealthy_host_alarm_fires_after_three_periods(template: dict[str, Any]) -> None:
    alarm = alarm_watching(template, "UnHealthyHostCount")["Properties"]
    assert alarm["Namespace"] == "AWS/ApplicationELB"
    assert alarm["Dimensions"] == ALB_DIMENSIONS
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 3
    assert alarm["Statistic"] == "Maximum"


def test_p99_response_time_alarm_uses_its_parameter(template: dict[str, Any]) -> None:
    alarm = alarm_watching(template, "TargetResponseTime")["Properties"]
    assert alarm["Namespace"] == "AWS/ApplicationELB"
    assert alarm["Dimensions"] == ALB_DIMENSIONS
    assert alarm["ExtendedStatistic"] == "p99"
    assert "Statistic" not in alarm
    assert alarm["Threshold"] == {"Ref": "AlarmP99LatencySeconds"}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert template["Parameters"]["AlarmP99LatencySeconds"]["Default"] == 2


def test_database_connections_alarm_exists_only_with_an_instance_identifier(template: dict[str, Any]) -> None:
    """The stack does not create the database (its URI is a secret), so it cannot name the instance."""
    assert not resources(template, "AWS::RDS::DBInstance")
    resource = alarm_watching(template, "DatabaseConnections")
    assert resource["Condition"] == "HasDatabaseInstance"
    assert template["Conditions"]["HasDatabaseInstance"] == not_empty("DatabaseInstanceIdentifier")
    assert template["Parameters"]["DatabaseInstanceIdentifier"]["Default"] == ""
    alarm = resource["Properties"]
    assert alarm["Namespace"] == "AWS/RDS"
    assert alarm["Dimensions"] == [
        {"Name": "DBInstanceIdentifier", "Value": {"Ref": "DatabaseInstanceIdentifier"}}
    ]
    assert alarm["Threshold"] == {"Ref": "AlarmDatabaseConnections"}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_alarms_notify_the_topic_only_when_one_is_given(template: dict[str, Any]) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 4
    assert template["Conditions"]["HasAlarmTopic"] == not_empty("AlarmTopicArn")
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""
    for name, alarm in alarms.items():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == TO_TOPIC, name
        assert properties["OKActions"] == TO_TOPIC, name
        assert properties.get("ActionsEnabled", True) is True, name
        assert "docs/operations.md" in str(properties["AlarmDescription"]), name


def test_every_parameter_is_grouped_once_and_documented(template: dict[str, Any]) -> None:
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    assert sorted(grouped) == sorted(template["Parameters"]), (
        "a parameter missing from, or twice in, the groups"
    )
    doc = DEPLOY_DOC.read_text()
    for name in template["Parameters"]:
        assert f"`{name}`" in doc, f"{name} is not in docs/deploy.md's parameter table"


# --- the stack in moto ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    from tests.services import free_port

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {
            "endpoint_url": f"http://{host}:{port}",
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
    finally:
        server.stop()


# moto's CloudFormation skips these resource types (with a warning): they are checked on the template only.
# (A filter's fields are separated by colons, so "." stands for each ":" of the type names.)
@pytest.mark.filterwarnings(
    r"ignore:Tried to parse AWS..(ApplicationAutoScaling..\w+|CloudWatch..Alarm) but it's not supported"
)
def test_stack_creates_the_service_and_task_definition(aws: dict[str, Any]) -> None:
    ec2 = boto3.client("ec2", **aws)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{'ab'[i % 2]}")[
            "Subnet"
        ]["SubnetId"]
        for i in range(4)
    ]
    database_group = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    certificate = boto3.client("acm", **aws).request_certificate(DomainName="registry.example.com")[
        "CertificateArn"
    ]
    secretsmanager = boto3.client("secretsmanager", **aws)
    secret_arns = {
        parameter: secretsmanager.create_secret(Name=parameter, SecretString="not-used")["ARN"]
        for parameter in SECRET_ENV.values()
    }
    parameters = {
        "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/hokusai-registry:abc123",
        "VpcId": vpc,
        "PublicSubnetIds": ",".join(subnets[:2]),
        "PrivateSubnetIds": ",".join(subnets[2:]),
        "IngressCidr": "0.0.0.0/0",
        "DatabaseSecurityGroupId": database_group,
        "PublicHostName": "registry.example.com",
        "CertificateArn": certificate,
        "ArtifactsBucketName": "registry-artifacts",
        "ArtifactsPrefix": "models",
        **secret_arns,
    }
    cloudformation = boto3.client("cloudformation", **aws)
    cloudformation.create_stack(
        StackName="registry",
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cloudformation.describe_stacks(StackName="registry")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["RegistryUrl"] == "https://registry.example.com"

    ecs = boto3.client("ecs", **aws)
    (service,) = ecs.describe_services(cluster=outputs["ClusterName"], services=[outputs["ServiceName"]])[
        "services"
    ]
    assert service["status"] == "ACTIVE"
    assert service["taskDefinition"] == outputs["TaskDefinitionArn"]
    task = ecs.describe_task_definition(taskDefinition=outputs["TaskDefinitionArn"])["taskDefinition"]
    (registry,) = task["containerDefinitions"]
    assert registry["image"] == parameters["ImageUri"]
    assert artifact_serving_problems(registry) == []
    env = {e["name"]: e["value"] for e in registry["environment"]}
    assert env["HOKUSAI_REGISTRY_ARTIFACTS_DESTINATION"] == "s3://registry-artifacts/models"
    assert {s["name"]: s["valueFrom"] for s in registry["secrets"]} == {
        name: secret_arns[parameter] for name, parameter in SECRET_ENV.items()
    }

    elbv2 = boto3.client("elbv2", **aws)
    (lb,) = elbv2.describe_load_balancers()["LoadBalancers"]
    assert lb["DNSName"] == outputs["LoadBalancerDnsName"]
    (group,) = elbv2.describe_target_groups(LoadBalancerArn=lb["LoadBalancerArn"])["TargetGroups"]
    assert group["HealthCheckPath"] == "/health"
    listeners = {
        listener["Port"]: listener["DefaultActions"]
        for listener in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    }
    assert listeners[443] == [{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}]
    assert [a["Type"] for a in listeners[80]] == ["redirect"]

    # moto drops the task definition's taskRoleArn: find the role through the stack.
    task_role = cloudformation.describe_stack_resource(StackName="registry", LogicalResourceId="TaskRole")[
        "StackResourceDetail"
    ]["PhysicalResourceId"]
    iam = boto3.client("iam", **aws)
    (policy,) = iam.list_role_policies(RoleName=task_role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=task_role, PolicyName=policy)["PolicyDocument"]
    if isinstance(document, str):  # moto stores the resolved template value as its Python repr
        document = ast.literal_eval(document)
    # moto also leaves a None where the unused conditional (KMS) statement was.
    granted = {str(s["Resource"]): s.get("Condition") for s in document["Statement"] if s}
    assert granted == {
        "arn:aws:s3:::registry-artifacts/models/*": None,
        "arn:aws:s3:::registry-artifacts": {"StringLike": {"s3:prefix": "models/*"}},
    }
