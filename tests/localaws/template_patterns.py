"""Reads resources out of the SAM template (EventBridge rule patterns, the state table's
properties, the functions' policies), resolving the few CloudFormation intrinsics they use (Ref,
Sub, If, Join, Equals, Not, And, Or, Select, Split, GetAtt, AWS::NoValue) against given parameter
values, so local tests use exactly what production uses. A parameter without a value and without a
default is an error only where it is used; so is a resource's Ref or attribute that was not given
(``resources``: logical id => {"Ref": ..., "Arn": ...}, the physical names of a test's resources)."""

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


NO_VALUE = object()  # AWS::NoValue: the list item or property is dropped


class _Missing:
    def __init__(self, name: str):
        self.name = name


class Template:
    def __init__(self, path: str, parameters: dict[str, str], region: str, account: str = ACCOUNT_ID,
                 resources: dict[str, dict] | None = None):
        self.resources = resources or {}
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
                self.values[name] = _Missing(name)
                continue
            if spec.get("Type") == "CommaDelimitedList":
                raw = [part.strip() for part in str(raw).split(",")] if str(raw) else [""]
            self.values[name] = raw

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.doc["Conditions"][name]))

    def value(self, name: str):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name not in self.values:
            if name in self.doc.get("Resources", {}):
                return self.attribute(name, "Ref")
            raise ValueError(f"{name} is not a template parameter or pseudo parameter")
        value = self.values[name]
        if isinstance(value, _Missing):
            raise ValueError(f"template parameter {name} needs a value")
        return value

    def attribute(self, resource: str, attribute: str):
        """`!Ref resource` (attribute `Ref`) or `!GetAtt resource.attribute`, from `resources`."""
        known = self.resources.get(resource, {})
        if attribute not in known:
            raise ValueError(f"resource {resource}'s {attribute} needs a value (resources)")
        return known[attribute]

    def _sub(self, value) -> str:
        text, variables = (value, {}) if isinstance(value, str) else (value[0], self.resolve(value[1]))

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and name not in self.values:
                return str(self.attribute(*name.split(".", 1)))
            return str(self.value(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def resolve(self, node):
        if isinstance(node, list):
            return [item for item in (self.resolve(item) for item in node) if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, value), = node.items()
            if key == "Ref":
                return self.value(value)
            if key == "Fn::Sub":
                return self._sub(value)
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
            if key == "Fn::And":
                return all(self.resolve(item) for item in value)
            if key == "Fn::Or":
                return any(self.resolve(item) for item in value)
            if key == "Fn::Select":
                index, items = self.resolve(value)
                return items[int(index)]
            if key == "Fn::Split":
                separator, text = self.resolve(value)
                return text.split(separator)
            if key == "Condition":
                return self.condition(value)
            if key == "Fn::GetAtt":
                return self.attribute(*value)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def event_pattern(self, rule: str) -> dict:
        resource = self.doc["Resources"][rule]
        if resource["Type"] != "AWS::Events::Rule":
            raise ValueError(f"{rule} is not an AWS::Events::Rule")
        return self.resolve(resource["Properties"]["EventPattern"])

    def properties(self, resource: str, kind: str) -> dict:
        """The resolved `Properties` of a resource of type `kind`."""
        spec = self.doc["Resources"][resource]
        if spec["Type"] != kind:
            raise ValueError(f"{resource} is not an {kind}")
        return self.resolve(spec.get("Properties", {}))
