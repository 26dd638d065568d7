\set p random(1, 20000 * :scale)
SELECT id, sku, name, price, stock FROM products WHERE id = :p;
