-- Run once by the postgres image on an empty volume: the Optuna study's own database.
CREATE DATABASE optuna;
