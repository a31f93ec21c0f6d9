"""Everything only training needs: data, degradations, the loop and the recipes."""
