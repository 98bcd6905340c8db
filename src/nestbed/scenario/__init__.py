"""Experiment control by scenario: MAGI AAL files (aal), their model (model), the engine that runs them (engine)
and the agents they name (agents)."""
from nestbed.scenario.aal import load_scenario, load_scenario_text
from nestbed.scenario.engine import Engine, Outcome, Status
from nestbed.scenario.model import Scenario, ScenarioError

__all__ = ["Engine", "Outcome", "Scenario", "ScenarioError", "Status", "load_scenario", "load_scenario_text"]
