"""Reads EventBridge rule patterns out of the SAM template, resolving the few CloudFormation
intrinsics they use (Ref, Sub, If, Join, Equals, Not) against given parameter values, so local
routing uses exactly the patterns that production uses."""

from __future__ import annotations

import re

import yaml

ACCOUNT_ID = "123456789012"


class _Loader(yaml.SafeLoader):
    pass


def _intrinsic(name: str):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if name == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Ref" if name == "Ref" else f"Fn::{name}": value}

    return construct


for _tag in ["Ref", "Sub", "If", "Join", "Equals", "Not", "GetAtt", "Split", "Select", "And", "Or", "Condition"]:
    _Loader.add_constructor(f"!{_tag}", _intrinsic(_tag))


class Template:
    def __init__(self, path: str, parameters: dict[str, str], region: str, account: str = ACCOUNT_ID):
        with open(path) as handle:
            self.doc = yaml.load(handle, Loader=_Loader)
        self.values: dict[str, object] = {
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::StackName": "conveyor",
        }
        for name, spec in self.doc.get("Parameters", {}).items():
            raw = parameters.get(name, spec.get("Default"))
            if raw is None:
                raise ValueError(f"template parameter {name} needs a value")
            if spec.get("Type") == "CommaDelimitedList":
                raw = [part.strip() for part in str(raw).split(",")] if str(raw) else [""]
            self.values[name] = raw

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.doc["Conditions"][name]))

    def resolve(self, node):
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, value), = node.items()
            if key == "Ref":
                return self.values[value]
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(self.values[m.group(1)]), value)
            if key == "Fn::If":
                condition, then, otherwise = value
                return self.resolve(then if self.condition(condition) else otherwise)
            if key == "Fn::Join":
                separator, items = value
                return separator.join(str(item) for item in self.resolve(items))
            if key == "Fn::Equals":
                left, right = self.resolve(value)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(value[0])
            if key == "Condition":
                return self.condition(value)
        return {key: self.resolve(value) for key, value in node.items()}

    def event_pattern(self, rule: str) -> dict:
        resource = self.doc["Resources"][rule]
        if resource["Type"] != "AWS::Events::Rule":
            raise ValueError(f"{rule} is not an AWS::Events::Rule")
        return self.resolve(resource["Properties"]["EventPattern"])
