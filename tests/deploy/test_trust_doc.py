"""docs/design.md's trust model shows the signing key's policy: it is publisher.yaml's, statement for
statement (who may sign, with which algorithm and message type), and the agent signs within it."""

from __future__ import annotations

import json
import re

from runas_agent.sources.signature import ALGORITHM
from tests.deploy.templates import REPO, template

DESIGN = REPO / "docs" / "design.md"


def documented_key_policy() -> dict:
    text = DESIGN.read_text()
    after = text.split("The key policy of publisher.yaml's `SigningKey`", 1)[1]
    return json.loads(re.search(r"```json\n(.*?)```", after, re.S).group(1))


def test_the_documented_signing_key_policy_is_the_templates():
    deployed = template("publisher.yaml")["Resources"]["SigningKey"]["Properties"]["KeyPolicy"]["Statement"]
    documented = documented_key_policy()["Statement"]
    assert [s["Sid"] for s in documented] == [s["Sid"] for s in deployed]
    for doc, dep in zip(documented, deployed):
        assert (doc["Effect"], doc["Action"], doc.get("Condition")) == (dep["Effect"], dep["Action"], dep.get("Condition")), doc["Sid"]


def test_the_agent_signs_as_the_key_policy_allows():
    (sign,) = [s for s in template("publisher.yaml")["Resources"]["SigningKey"]["Properties"]["KeyPolicy"]["Statement"]
               if s["Action"] == "kms:Sign"]
    assert sign["Condition"]["StringEquals"] == {"kms:SigningAlgorithm": ALGORITHM, "kms:MessageType": "DIGEST"}
    key = template("publisher.yaml")["Resources"]["SigningKey"]["Properties"]
    assert (key["KeySpec"], key["KeyUsage"]) == ("RSA_3072", "SIGN_VERIFY")
