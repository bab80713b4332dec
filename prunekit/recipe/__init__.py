"""Recipes: YAML pipelines of steps (prune, finetune, distill, share, factorize,
quantize, export, measure).

recipe = prunekit.Recipe.from_yaml("recipes/deep-compression-lenet300.yaml")
report = prunekit.run_recipe(recipe, model, train_loader, test_loader, out="runs/dc")
report = prunekit.run_recipe(recipe, model, train_loader, test_loader, out="runs/dc",
                             resume=True)   # after an interruption: from the last saved step
"""

from prunekit.recipe.recipe import Recipe
from prunekit.recipe.report import RecipeReport
from prunekit.recipe.runner import Evaluation, run_recipe
from prunekit.recipe.steps import VERBS, RecipeError, Step

__all__ = ["VERBS", "Evaluation", "Recipe", "RecipeError", "RecipeReport", "Step", "run_recipe"]
